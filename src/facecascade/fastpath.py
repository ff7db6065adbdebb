"""The fast inference path: each cascade level as one graph, fed by vectorised crops.

:class:`FastCascade` is a :class:`facecascade.cascade.Cascade` (same
``predict``, ``predict_level``, manifest and artifact) whose ``predict_level``
runs a level in three steps for a whole batch of faces:

1. **windows** of every net of the level for every face in one compiled pass
   (:func:`facecascade.sampling.level_windows`: the patch frames of
   :func:`facecascade.crops.patch_frames` and ``anchor + fraction * frame size``,
   the arithmetic of :func:`facecascade.crops.net_windows`, bit for bit);
2. **crops** of all those windows, standardised, in one compiled pass
   (:func:`facecascade.sampling.crop_groups`: the reference ``warpAffine`` crops to
   the bit, then :func:`facecascade.crops.standardise`);
3. **one graph** per level (built by :mod:`facecascade.fused`): standardised crops and
   windows in, fused points out: the nets, the nets' relative outputs back to image
   pixels and the fusion (eq. 4 weighted average at level 1, pair averages at levels 2
   and 3, and the share ``model.keep`` of the previous estimate). Each level has two
   such graphs (:func:`facecascade.plans.plan_level`): for a single face the ten patch
   nets run as one stack of grouped convolutions; for a batch every net runs as its own
   convolution stack, which onnxruntime's blocked (NCHWc) kernels run much faster once
   there are two faces or more (:data:`facecascade.plans.MIN_GROUP`). Level 1's three
   nets run apart in both.

Steps 1 and 2 are numba-compiled (``cache=True``: compiled once per machine, then
loaded) so that a single face costs little more than its graphs: for one face the
numpy glue of the same arithmetic took longer than the networks. Loading them costs a
process about 0.6 s, more than a few faces take without them: until a call of
:data:`COMPILE_MIN_FACES` faces or more has loaded them, smaller calls cut their
windows and crops with numpy and OpenCV (:func:`small_windows`, :func:`small_crops`),
the same windows and crop bytes (``FastCascade(compiled=...)``). ``facecascade predict``
on a photo therefore never loads numba.

The graphs run on onnxruntime (one session per graph, default) or as fused torch
modules (``backend="torch"``). **Serving needs no PyTorch**: a cascade artifact keeps
its level graphs and their plans (``graphs/index.json``, :func:`write_graph_index`,
written by :func:`facecascade.cascade.save_cascade`), bound to the artifact's
``weights.pt`` and parameters by their SHA-256. When they match
(:func:`read_graph_index`), :func:`facecascade.cascade.load_cascade` returns a
cascade that runs from the saved graphs and reads ``weights.pt`` (with PyTorch)
only if its networks are asked for (:attr:`Cascade.nets`, :meth:`FastCascade.reference`,
the torch backend). Otherwise the graphs are exported from the weights on first use
(:mod:`facecascade.fused`; about a second a level). A saved graph whose bytes or
plan do not match the index is exported afresh, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cascade import Cascade
from .config import Config
from .crops import MIN_STD, cut, refined_faces, standardise
from .frame import points_frame
from .geometry import window_to_output
from .io import write_json_atomic
from .plans import GRAPH_VERSION, OPSET, CropLayout, LevelPlan, plan_level
from .specs import get_spec

if TYPE_CHECKING:
    import torch

#: graph backends of :class:`FastCascade`
BACKENDS = ("onnxruntime", "torch")
#: fewest faces in a part of a batch run by its own thread
MIN_PART = 32
#: faces in one call from which a :class:`FastCascade` loads its compiled passes (``compiled``)
COMPILE_MIN_FACES = 64
#: folder of a cascade artifact holding its level graphs
GRAPH_DIR = "graphs"
#: the saved graphs' index in :data:`GRAPH_DIR`
GRAPH_INDEX = "index.json"
GRAPH_INDEX_FORMAT = "facecascade.graphs"


# ---------------------------------------------------------------------------- saved graphs

def graph_file(level: int, key: str) -> str:
    """File name of a level graph in an artifact's :data:`GRAPH_DIR`."""
    return f"level{level}-{key}.onnx"


def params_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of what a cascade manifest says its graphs are made from: levels and params."""
    text = json.dumps([manifest["levels"], manifest["params"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SavedGraph:
    """A level graph of an artifact: its plan, file and the SHA-256 of its bytes."""

    plan: LevelPlan
    path: Path
    sha256: str


def write_graph_index(folder: str | Path, graphs: Mapping[tuple[int, bool], tuple[LevelPlan, str]],
                      *, weights_sha256: str, params_sha256: str) -> Path:
    """Write :data:`GRAPH_INDEX` into ``folder``: each ``(level, grouped)`` graph's file,
    bytes' SHA-256 and plan, bound to the weights and params (:func:`params_digest`) they
    were exported from."""
    folder = Path(folder)
    path = folder / GRAPH_INDEX
    entries = [{"level": level, "grouped": grouped, "file": file,
                "sha256": file_digest(folder / file), "plan": plan.to_dict()}
               for (level, grouped), (plan, file) in sorted(graphs.items())]
    write_json_atomic({"format": GRAPH_INDEX_FORMAT, "version": GRAPH_VERSION, "opset": OPSET,
                       "weights_sha256": weights_sha256, "params_sha256": params_sha256,
                       "graphs": entries}, path)
    return path


def read_graph_index(artifact: str | Path, manifest: Mapping[str, Any],
                     ) -> dict[tuple[int, bool], SavedGraph] | None:
    """The saved graphs of a cascade artifact, keyed by ``(level, grouped)``, when its
    :data:`GRAPH_INDEX` is for this facecascade's graph layout and matches the
    artifact's ``weights.pt`` and ``manifest`` params; else ``None`` (the graphs are
    then exported from the weights). Files are only named by the index, never read
    here; :class:`FastCascade` checks each one's SHA-256 before running it."""
    artifact = Path(artifact)
    index = artifact / GRAPH_DIR / GRAPH_INDEX
    weights = artifact / "weights.pt"
    if not (index.is_file() and weights.is_file()):
        return None
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
        if (doc.get("format"), doc.get("version"), doc.get("opset")) != (
                GRAPH_INDEX_FORMAT, GRAPH_VERSION, OPSET):
            return None  # another layout: its graphs are not this code's
        if (doc.get("params_sha256") != params_digest(manifest)
                or doc.get("weights_sha256") != file_digest(weights)):
            return None  # weights or params changed since the graphs were saved
        saved = {}
        for entry in doc["graphs"]:
            name = str(entry["file"])
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"graph file {name!r} is not a plain file name")
            saved[(int(entry["level"]), bool(entry["grouped"]))] = SavedGraph(
                LevelPlan.from_dict(entry["plan"]), index.parent / name, str(entry["sha256"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"{index}: not a usable graph index ({exc}); the level graphs will "
                      "be exported from the weights", stacklevel=2)
        return None
    wanted = {(k, g) for k in range(1, int(manifest["levels"]) + 1) for g in (True, False)}
    return saved if wanted <= set(saved) else None


# ---------------------------------------------------------------------------- runners

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
        A folder of exported level graphs (an artifact's :data:`GRAPH_DIR`): a level
        whose graph is there under its :func:`facecascade.fused.graph_key` is not
        exported again.
    saved : mapping, optional
        Saved graphs known to be of these weights and params
        (:func:`read_graph_index`): levels run from them without building the networks.
    compiled : bool, optional
        Whether the windows and crops are cut by the compiled passes
        (:mod:`facecascade.sampling`, numba) or by numpy and OpenCV
        (:func:`small_windows`, :func:`small_crops`); both give the reference's windows
        and crop bytes. By default (``None``) a call of fewer than
        :data:`COMPILE_MIN_FACES` faces uses numpy and OpenCV until a larger one has
        loaded the compiled passes, used for every call after it: loading them costs
        about 0.6 s of a process's start (numba and its registries), which a few faces
        never repay. ``True`` loads them on first use (servers: :meth:`load_compiled`).

    The networks (:attr:`nets`) are built on first use: from saved graphs a cascade
    predicts without them, and without PyTorch. The graphs are loaded or exported on
    first use of a level; :attr:`graph_sources` says where each came from
    (``"saved"`` or ``"exported"``), keyed by ``(level, grouped)``; :meth:`reference`
    gives the plain :class:`Cascade` of the same weights.
    """

    def __init__(self, cfg: Config, weights: Mapping[str, Mapping[str, torch.Tensor]], *,
                 levels: int, device: str | torch.device | None = None,
                 backend: str = "onnxruntime", threads: int | None = None,
                 graphs: str | Path | None = None,
                 saved: Mapping[tuple[int, bool], SavedGraph] | None = None,
                 compiled: bool | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend == {backend!r}, must be one of {BACKENDS}")
        self._setup(cfg, weights, levels=levels, device=device)  # nets: on first use
        self.backend = backend
        self.threads = threads
        self.graphs = None if graphs is None else Path(graphs)
        self.saved = dict(saved or {})
        self.graph_sources: dict[tuple[int, bool], str] = {}
        self._runners: dict[tuple[int, bool], tuple[LevelPlan, Any]] = {}
        self._window_plans: dict[int, LevelPlan] = {}
        self._sessions: dict[Path, _OrtLevel] = {}
        self.compiled = compiled
        self._compiled_passes: tuple[Callable, Callable] | None = None

    @classmethod
    def from_cascade(cls, cascade: Cascade, **kwargs: Any) -> FastCascade:
        """The fast path of an existing (reference) cascade's weights."""
        weights = {n: net.state_dict() for n, net in cascade.nets.items()}
        return cls(cascade.cfg, weights, levels=cascade.levels, **kwargs)

    def load_compiled(self) -> tuple[Callable, Callable]:
        """Load the compiled windows and crops passes (numba; once per process a few
        tenths of a second): every later call uses them."""
        if self._compiled_passes is None:
            from .sampling import crop_groups, level_windows

            self._compiled_passes = (level_windows, crop_groups)
        return self._compiled_passes

    def passes(self, count: int) -> tuple[Callable, Callable]:
        """The windows and crops functions a call of ``count`` faces uses (:attr:`compiled`)."""
        if self.compiled or (self.compiled is None and (self._compiled_passes is not None
                                                        or count >= COMPILE_MIN_FACES)):
            return self.load_compiled()
        return small_windows, small_crops

    def reference(self) -> Cascade:
        """The reference :class:`Cascade` of the same weights."""
        return Cascade(self.cfg, {n: net.state_dict() for n, net in self.nets.items()},
                       levels=self.levels, device=self.device)

    def _level(self, level: int, grouped: bool = True,
               ) -> tuple[LevelPlan, dict[str, torch.nn.Module]]:
        """The plan of a level's graph from its nets, and CPU copies of those nets."""
        import copy

        from .fused import level_plan

        cpu = {n: copy.deepcopy(net).cpu().eval() for n, net in self.nets.items()
               if get_spec(n).level == level}
        return level_plan(self.cfg, level, cpu, grouped=grouped), cpu

    def _window_plan(self, level: int) -> LevelPlan:
        """The plan whose windows a level's graphs read (both share its net order)."""
        if level not in self._window_plans:
            self._window_plans[level] = plan_level(self.cfg, level)
        return self._window_plans[level]

    def runner(self, level: int, *, grouped: bool = True) -> tuple[LevelPlan, Any]:
        """The plan and the graph runner of ``level`` (built on first use): with ``grouped``
        the graph that runs a single face, without it the one that runs batches
        (:func:`facecascade.plans.plan_level`, :data:`facecascade.plans.MIN_GROUP`)."""
        key = (level, grouped)
        if key not in self._runners:
            self._runners[key] = self._saved_runner(key) or self._built_runner(level, grouped)
        return self._runners[key]

    def _saved_runner(self, key: tuple[int, bool]) -> tuple[LevelPlan, Any] | None:
        """The runner of a saved graph (:attr:`saved`), or None when there is no usable one."""
        saved = self.saved.get(key) if self.backend == "onnxruntime" else None
        if saved is None:
            return None
        if not saved.plan.same_windows(self._window_plan(key[0])):
            warnings.warn(f"{saved.path}: its plan is not the one of the cascade's params; "
                          "exporting the level again", stacklevel=3)
            return None
        run = self._graph_session(saved.path, len(saved.plan.groups), saved.sha256)
        if run is None:
            return None
        self.graph_sources[key] = "saved"
        return saved.plan, run

    def _graph_session(self, path: Path, n_groups: int,
                       sha256: str | None = None) -> _OrtLevel | None:
        """An onnxruntime session of the graph file ``path`` (one per file), its bytes
        checked against ``sha256`` when given; None, with a warning, when the file cannot
        be used (the level is then exported again)."""
        if path not in self._sessions:
            try:
                model = path.read_bytes()
                if sha256 is not None and hashlib.sha256(model).hexdigest() != sha256:
                    raise ValueError("its bytes are not the ones the graph index names")
                self._sessions[path] = _OrtLevel(model, n_groups)
            except Exception as exc:  # noqa: BLE001 - a damaged graph is exported again
                warnings.warn(f"{path}: not a usable graph ({exc}); exporting it again",
                              stacklevel=4)
                return None
        return self._sessions[path]

    def _built_runner(self, level: int, grouped: bool) -> tuple[LevelPlan, Any]:
        """The runner of a level graph built from the nets (with PyTorch)."""
        from .fused import LevelGraph, TorchLevel, export_level, graph_key

        key = (level, grouped)
        plan, cpu = self._level(level, grouped)
        other = self._runners.get((level, not grouped))
        if other is not None and other[0].groups == plan.groups:  # level 1: one graph
            if (level, not grouped) in self.graph_sources:  # onnxruntime only
                self.graph_sources[key] = self.graph_sources[(level, not grouped)]
            return other
        graph = LevelGraph(plan, cpu).eval()
        if self.backend == "torch":
            return plan, TorchLevel(graph)
        self.graph_sources[key] = "exported"
        found = (self.graphs / graph_file(level, graph_key(plan, cpu))
                 if self.graphs is not None else None)
        run = (self._graph_session(found, len(plan.groups))
               if found is not None and found.is_file() else None)
        if run is not None:
            self.graph_sources[key] = "saved"
            return plan, run
        return plan, _OrtLevel(export_level(graph, plan), len(plan.groups))

    def write_graphs(self, folder: str | Path) -> dict[tuple[int, bool], tuple[LevelPlan, str]]:
        """Export every level's graphs (for one face and for batches) into ``folder``,
        each under its :func:`facecascade.fused.graph_key`; returns each ``(level,
        grouped)`` graph's plan and file name (:func:`write_graph_index` indexes them)."""
        from .fused import LevelGraph, export_level, graph_key
        from .io import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for level in self.levels_available:
            for grouped in (True, False):
                plan, cpu = self._level(level, grouped)
                name = graph_file(level, graph_key(plan, cpu))
                if not (folder / name).is_file():  # the two plans of a level may be the same
                    with atomic_path(folder / name) as tmp:
                        tmp.write_bytes(export_level(LevelGraph(plan, cpu).eval(), plan))
                out[(level, grouped)] = (plan, name)
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
        level_windows, crop_groups = self.passes(n)
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


# ---------------------------------------------------------------------------- small batches

def small_windows(plan: LevelPlan, frames: np.ndarray, prev: np.ndarray,
                  points_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`facecascade.sampling.level_windows` in numpy (the reference's own
    :func:`facecascade.frame.points_frame`; the same numbers, bit for bit), without
    compiling anything: for a few faces."""
    frames = np.asarray(frames, np.float64)
    prev = np.asarray(prev, np.float64)
    patch = points_frame(prev, points_scale, frames) if points_scale > 0 else frames
    left, top, right, bottom = patch.T
    w, h = (right - left)[:, None], (bottom - top)[:, None]
    anchored = plan.anchors >= 0
    anchor = prev[:, np.maximum(plan.anchors, 0)]  # (n, m, 2)
    ax = np.where(anchored, anchor[..., 0], left[:, None])
    ay = np.where(anchored, anchor[..., 1], top[:, None])
    f = plan.fractions
    windows = np.stack([ax + f[:, 0] * w, ay + f[:, 1] * h, ax + f[:, 2] * w,
                        ay + f[:, 3] * h], axis=-1)
    return windows, patch


def small_crops(grays: Sequence[np.ndarray], image_index: np.ndarray, windows: np.ndarray,
                layout: CropLayout, *, min_std: float = MIN_STD) -> list[np.ndarray]:
    """:func:`facecascade.sampling.crop_groups` with the reference's own functions
    (``warpAffine`` per window, :func:`facecascade.crops.standardise`), without compiling
    anything: for a few faces."""
    n = len(windows)
    outs, first = [], 0
    for (w, h), count in layout.groups:
        out = np.empty((n, count, h, w), np.float32)
        for row in range(n):
            maps = window_to_output(windows[row, first:first + count], (w, h))
            crops = cut(grays[image_index[row]], maps, (w, h))
            out[row] = standardise(crops, (w, h), min_std=min_std)[:, 0]
        outs.append(out)
        first += count
    return outs
